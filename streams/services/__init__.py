"""What the agents do, one module per concern; agents in streams/agents.py stay thin."""
