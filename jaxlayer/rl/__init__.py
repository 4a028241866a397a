"""Layer-selective RL: selection, advantages, losses, the train step."""
