"""The recursive reasoning models: HRM (ACT v1) and TRM, their building blocks, the reference
loss types, and their FLOPs per ACT step."""
