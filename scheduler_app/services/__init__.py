"""Business rules: services raise AppError subclasses and never import api/ or tasks/."""
