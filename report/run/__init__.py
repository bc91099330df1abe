"""The run side of `report/`: checking and loading models, prompt families, run folders, `run` itself."""
