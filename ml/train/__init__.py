"""Fine-tuning and distillation of the student model."""
