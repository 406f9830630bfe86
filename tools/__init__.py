"""Host tools: weight image export, loading and inference over serial or the simulator."""
