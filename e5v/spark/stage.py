"""``E5VEmbeddings``: a pyspark ML Transformer that adds an E5-V embedding column to a DataFrame.

Why an iterator ``pandas_udf`` (not ``mapInPandas``): only the input columns travel to Python through
Arrow, every other column stays in the JVM, and Spark guarantees one output row per input row in order.
The UDF is marked non-deterministic so Spark's optimizer never duplicates it when we split its struct
result into ``outputCol`` and ``errorCol`` (it would otherwise embed every row twice).

The model is loaded inside the Python worker (never on the driver) through ``worker.cached_model``: once
per worker process, reused across batches, partitions and tasks while Spark reuses the worker
(``spark.python.worker.reuse``, on by default).
"""

from __future__ import annotations

from typing import Any

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructType

from .decode import IMAGE_FIELDS
from .worker import make_udf

_RESULT = "__e5v_result"


class E5VEmbeddings(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Embed text, images or image+text rows with E5-V.

    Set either ``inputCol`` (one column: string -> text, binary -> encoded image file such as
    ``binaryFile``'s ``content``, image-source struct -> image) or ``imageCol`` and/or ``textCol`` (both set:
    composed image+text rows). Null inputs give a null embedding; rows that cannot be embedded give a null
    embedding and a message in ``errorCol`` -- one bad row never fails the job.

    Example:
        >>> df = spark.read.format("image").load("photos/")
        >>> E5VEmbeddings(model="/models/e5-v", inputCol="image", batchSize=8).transform(df)
    """

    model = Param(Params._dummy(), "model", "model directory or Hugging Face id, readable on every executor",
                  TypeConverters.toString)
    backend = Param(Params._dummy(), "backend", "'torch', 'openvino' or 'auto'; empty is E5V_BACKEND or 'auto' (the route table)",
                    TypeConverters.toString)
    inputCol = Param(Params._dummy(), "inputCol", "one input column: string (text), binary (encoded image) "
                     "or image-source struct", TypeConverters.toString)
    imageCol = Param(Params._dummy(), "imageCol", "image column (binary or image-source struct)",
                     TypeConverters.toString)
    textCol = Param(Params._dummy(), "textCol", "text column; with imageCol: composed image+text rows",
                    TypeConverters.toString)
    outputCol = Param(Params._dummy(), "outputCol", "output column, array<float>", TypeConverters.toString)
    errorCol = Param(Params._dummy(), "errorCol", "column with the reason a row could not be embedded",
                     TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "rows per model forward pass", TypeConverters.toInt)
    imageMode = Param(Params._dummy(), "imageMode", "'anyres' (faithful) or 'base' (one view, ~5x cheaper)",
                      TypeConverters.toString)
    instruction = Param(Params._dummy(), "instruction", "replaces the one-word instruction of the prompts; "
                        "empty keeps the model's default", TypeConverters.toString)
    normalize = Param(Params._dummy(), "normalize", "L2-normalise the embeddings", TypeConverters.toBoolean)
    family = Param(Params._dummy(), "family", "model family recipe by name (e.g. 'gme', 'vlm2vec'); empty picks "
                   "it from the config", TypeConverters.toString)
    task = Param(Params._dummy(), "task", "task adapter of checkpoints that carry several (jina-embeddings-v4); "
                 "empty: the family's default", TypeConverters.toString)
    prompt = Param(Params._dummy(), "prompt", "a named prompt set (e.g. 'passage' for jina-embeddings-v4); empty: "
                   "the family's default", TypeConverters.toString)
    numThreads = Param(Params._dummy(), "numThreads", "inference threads per Python worker; 0 = the task's "
                       "CPUs (spark.task.cpus, default 1)", TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, model: str | None = None, backend: str | None = None, inputCol: str | None = None,
                 imageCol: str | None = None, textCol: str | None = None, outputCol: str = "embedding",
                 errorCol: str = "embedding_error", batchSize: int = 8, imageMode: str = "anyres",
                 instruction: str | None = None, normalize: bool = True, numThreads: int = 0,
                 family: str | None = None, task: str | None = None, prompt: str | None = None):
        super().__init__()
        self._setDefault(backend="", outputCol="embedding", errorCol="embedding_error", batchSize=8,
                         imageMode="anyres", instruction="", normalize=True, numThreads=0, family="", task="",
                         prompt="")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, model: str | None = None, backend: str | None = None, inputCol: str | None = None,
                  imageCol: str | None = None, textCol: str | None = None, outputCol: str = "embedding",
                  errorCol: str = "embedding_error", batchSize: int = 8, imageMode: str = "anyres",
                  instruction: str | None = None, normalize: bool = True, numThreads: int = 0,
                  family: str | None = None, task: str | None = None, prompt: str | None = None) -> "E5VEmbeddings":
        """Set any of the params by keyword (None leaves a param unset)."""
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        return self._set(**kwargs)

    # Getters/setters in the pyspark style, for the params users change most.
    def setModel(self, value: str) -> "E5VEmbeddings":
        return self._set(model=value)

    def setInputCol(self, value: str) -> "E5VEmbeddings":
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> "E5VEmbeddings":
        return self._set(outputCol=value)

    def setBatchSize(self, value: int) -> "E5VEmbeddings":
        return self._set(batchSize=value)

    def getOutputCol(self) -> str:
        return self.getOrDefault(self.outputCol)

    def getErrorCol(self) -> str:
        return self.getOrDefault(self.errorCol)

    # ----------------------------------------------------------------- transform
    def _transform(self, dataset: DataFrame) -> DataFrame:
        roles = self._input_roles(dataset)
        out, err = self.getOrDefault(self.outputCol), self.getOrDefault(self.errorCol)
        for name in (out, err):
            if name in dataset.columns:
                raise ValueError(f"output column {name!r} already exists in the DataFrame; set outputCol/errorCol")
        udf = make_udf(self._worker_config(), tuple(role for role, _ in roles))
        result = udf(*[F.col(name) for _, name in roles])
        return (dataset.withColumn(_RESULT, result)
                .withColumn(out, F.col(f"{_RESULT}.embedding"))
                .withColumn(err, F.col(f"{_RESULT}.error"))
                .drop(_RESULT))

    def _input_roles(self, dataset: DataFrame) -> list[tuple[str, str]]:
        """Validate the column params against the schema: [(role, column)], role in image/text."""
        get = lambda p: self.getOrDefault(p) if self.isDefined(p) else None  # noqa: E731
        single, image, text = get(self.inputCol), get(self.imageCol), get(self.textCol)
        if not self.isDefined(self.model) or not get(self.model):
            raise ValueError("E5VEmbeddings needs model= (a model directory or Hugging Face id)")
        if single and (image or text):
            raise ValueError("set either inputCol, or imageCol and/or textCol, not both")
        if not (single or image or text):
            raise ValueError("set inputCol (text, binary or image column), or imageCol and/or textCol")
        if self.getOrDefault(self.batchSize) < 1:
            raise ValueError("batchSize must be at least 1")
        if self.getOrDefault(self.imageMode) not in ("anyres", "base"):
            raise ValueError("imageMode must be 'anyres' or 'base'")
        if single:
            kind = _column_kind(dataset, single)
            return [(kind, single)]
        roles = []
        if image:
            if _column_kind(dataset, image) != "image":
                raise ValueError(f"imageCol {image!r} must be binary or an image-source struct")
            roles.append(("image", image))
        if text:
            if _column_kind(dataset, text) != "text":
                raise ValueError(f"textCol {text!r} must be a string column")
            roles.append(("text", text))
        return roles

    def _worker_config(self) -> dict[str, Any]:
        """Everything a Python worker needs, as plain values (pickled into the UDF)."""
        g = self.getOrDefault
        return {"model": g(self.model), "backend": g(self.backend) or None, "batch_size": g(self.batchSize),
                "image_mode": g(self.imageMode), "instruction": g(self.instruction) or None,
                "normalize": g(self.normalize), "threads": g(self.numThreads), "family": g(self.family) or None,
                "task": g(self.task) or None, "prompt": g(self.prompt) or None}


def _column_kind(dataset: DataFrame, name: str) -> str:
    """'text' for string columns, 'image' for binary and image-source struct columns; else ValueError."""
    if name not in dataset.columns:
        raise ValueError(f"column {name!r} not found; the DataFrame has {dataset.columns}")
    dtype = dataset.schema[name].dataType
    if isinstance(dtype, StringType):
        return "text"
    if isinstance(dtype, BinaryType):
        return "image"
    if isinstance(dtype, StructType) and set(IMAGE_FIELDS) <= set(dtype.fieldNames()):
        return "image"
    raise ValueError(f"column {name!r} has type {dtype.simpleString()}; expected string (text), binary "
                     "(encoded image, e.g. binaryFile's content) or an image-source struct")
