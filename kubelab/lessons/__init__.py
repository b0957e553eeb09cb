"""Lessons: the model of ``labs/<id>/lesson.yaml``, its loader and the lifecycle plan."""
