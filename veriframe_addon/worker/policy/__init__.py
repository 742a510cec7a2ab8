"""The operator's rules for which work this node takes, and when: reward and engine filters, the
creator blocklist, the schedule, and how token amounts read.

Plain data and arithmetic on it (no I/O, no clock of its own: callers pass the time), so every rule is
tested directly. ``config`` parses the operator's settings into these; ``loop`` applies them. Imports
only ``errors``.
"""
