"""The bundled offline model's name, shared by both sides of `report/`: the run side loads it under this name
(report/run/bundled.py), the publishing side says where its weights come from (report/publish/abstract.py)."""

BUNDLED_MODEL_NAME = "gemma-3-270m"  # what --model names it
