"""The local stack: every component as a real process, started and stopped by `llmaas up`."""
