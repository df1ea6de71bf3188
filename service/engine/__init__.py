"""The reconstruction engine: photo bytes -> faces -> meshes, one module per pipeline stage.

Nothing here knows about HTTP; ``service.app`` calls :class:`service.engine.pipeline.Engine`.
"""
