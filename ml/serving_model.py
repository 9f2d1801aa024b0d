"""The served model as MLflow "models from code": this file is logged with every version.

MLflow loads it by running this file, not by unpickling an object, and the weights are
safetensors in the `model_dir` artifact. It imports only pandas, torch and transformers so a
scoring host needs none of the platform. `mlflow.pyfunc.load_model("models:/NAME@champion")`
returns it; input is a DataFrame with a `text` column, output one row per text with the label,
its probability and the full distribution.
"""

import json

import mlflow
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class StudentClassifier(PythonModel):
    def load_context(self, context):
        model_dir = context.artifacts["model_dir"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.max_length = int(context.model_config.get("max_length", 64)) if context.model_config else 64

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = [str(t) for t in model_input["text"]]
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                batch = self.tokenizer(texts[start:start + 64], truncation=True, max_length=self.max_length,
                                       padding=True, return_tensors="pt")
                probs = torch.softmax(self.model(**batch).logits.float(), dim=-1)
                for p in probs:
                    best = int(p.argmax())
                    rows.append({"label": self.labels[best], "score": float(p[best]),
                                 "probs": json.dumps({lab: round(float(v), 6) for lab, v in zip(self.labels, p)})})
        return pd.DataFrame(rows, columns=["label", "score", "probs"])


mlflow.models.set_model(StudentClassifier())
