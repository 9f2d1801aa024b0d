"""The served extraction model as MLflow "models from code": this file is logged with every version.

MLflow loads it by running this file, not by unpickling an object; the weights are the tagger's
safetensors. Unlike ml/serving_model.py (classification) it imports the platform's extraction
code (`ml.tasks.extraction`: windows, merging, span decoding), so the answers served are decoded
by the one function the evaluation scored; a scoring host needs this package installed.

`model_config` names the variant (`variant`, torch_fp32), `max_length` (tokens per window),
`stride` (tokens two windows share) and `threads` (intra-op threads; 0: the runtime's default).
Input: a DataFrame with a `text` column, a {"documents": [...]} mapping or a list of texts; a
document that is empty or over the size limit raises ml.tasks.extraction.BadDocument naming it.
Output: one row per document with `fields`, the JSON of {field: {"value", "start", "end",
"confidence"} or null}; value == document[start:end].
"""

import json
import threading

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


def documents_of(model_input) -> list:
    """The documents of a predict call, checked (ml.tasks.extraction.check_documents)."""
    from ml.tasks.extraction import check_documents

    if isinstance(model_input, pd.DataFrame):
        if "text" not in model_input.columns:
            raise ValueError(f"the input has columns {list(model_input.columns)}; send a `text` column.")
        return check_documents(list(model_input["text"]), where="text")
    if isinstance(model_input, dict):
        if "documents" not in model_input:
            raise ValueError(f"the input has keys {sorted(model_input)}; send {{'documents': [...]}}.")
        return check_documents(model_input["documents"])
    return check_documents(model_input)


class StudentExtractor(PythonModel):
    def load_context(self, context):
        config = dict(context.model_config or {})
        self.variant = config.get("variant", "torch_fp32")
        max_length = int(config.get("max_length", 256))
        self.load(
            context.artifacts["model_dir"],
            max_length=max_length,
            stride=int(config.get("stride", 64)),
            threads=int(config.get("threads", 0)),
        )

    def load(self, model_dir, *, max_length: int, stride: int, threads: int = 0) -> None:
        import torch

        from ml.tasks.extraction import fields_of, load_tagger

        if threads > 0:
            torch.set_num_threads(threads)
        self.model, self.tokenizer = load_tagger(model_dir)
        self.fields = fields_of(self.model.config.id2label)
        self.max_length, self.stride = max_length, stride
        # extract() switches the model to eval mode and back and the fast tokenizer is not
        # re-entrant ("Already borrowed"): one call at a time.
        self._lock = threading.Lock()

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from ml.tasks.extraction import extract

        documents = documents_of(model_input)
        with self._lock:
            answers = extract(
                self.model, self.tokenizer, documents, self.fields, self.max_length, self.stride
            )
        return pd.DataFrame(
            {"fields": [json.dumps(a, ensure_ascii=False) for a in answers]}, columns=["fields"]
        )


mlflow.models.set_model(StudentExtractor())
