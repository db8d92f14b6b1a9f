"""People over time: tracks, visits, their smoothed emotions and the alert rules."""
