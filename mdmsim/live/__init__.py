"""Live web pages: the interactive demo (`mdmsim demo --web`) and the load dashboard (`load`/`fleet --web`)."""
