"""Command-line options shared by the subcommands that load a model, training data and an attributor."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.attributors.hybrid import HybridAttributor, HybridConfig
from llm_attrib.attributors.influence import InfluenceAttributor, InfluenceConfig
from llm_attrib.attributors.magic import MagicConfig
from llm_attrib.data import Columns, EncodingConfig, load_records, table_records
from llm_attrib.distributed import is_main_process, local_device, main_process_first
from llm_attrib.errors import UserInputError
from llm_attrib.attributors.prefilter import Prefilter, PrefilterConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_model_and_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and data")
    group.add_argument("--model", required=True, help="local model folder (transformers or peft adapter)")
    group.add_argument("--base-model", default=None,
                       help="a peft adapter's local base model folder (default: its base_model_name_or_path)")
    group.add_argument("--train", required=True,
                       help="training data: a json/jsonl/csv/parquet/txt file or folder, or a saved Dataset")
    group.add_argument("--text-column", default="text", help="document column (default: text)")
    group.add_argument("--prompt-column", default="prompt", help="prompt column of prompt/completion data")
    group.add_argument("--completion-column", default="completion", help="completion column")
    group.add_argument("--id-column", default=None,
                       help="column with record ids (default: the 'id' column if there is one, else the row number)")
    group.add_argument("--modules", default=None, help="tracked layers: mlp, attention, all, or a regex "
                                                      "(default: a peft adapter's LoRA layers, else mlp)")
    group.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    group.add_argument("--max-length", type=int, default=None, help="context length (default: the model's)")
    group.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                       help="load the weights in this dtype (bfloat16 on a GPU; statistics stay float32/float64)")
    EncodingConfig.add_arguments(group)
    parser.set_defaults(configs=(*(parser.get_default("configs") or ()), EncodingConfig))


def add_attributor_options(parser: argparse.ArgumentParser) -> None:
    """The `InfluenceConfig` fields as flags (``--curvature``, ``--damping``, ``--batch-size`` …) and ``--factors``;
    the config is validated as soon as the arguments are parsed (`llm_attrib.cli`), before any model loads."""
    group = parser.add_argument_group("influence")
    InfluenceConfig.add_arguments(group)
    group.add_argument("--factors", default=None, help="folder for fitted factors (reused when they match)")
    parser.set_defaults(configs=(*(parser.get_default("configs") or ()), InfluenceConfig))


def add_prefilter_options(parser: argparse.ArgumentParser) -> None:
    """``--prefilter {tfidf,bm25}`` (`PrefilterConfig.index`; none = score every record) and the other
    `PrefilterConfig` fields as flags (``--candidates``), validated with the subcommand's other configs."""
    group = parser.add_argument_group("prefilter")
    group.add_argument("--prefilter", default=None, choices=PrefilterConfig.choices("index"),
                       help="score only each query's top --candidates records by TF-IDF or BM25 (default: all)")
    PrefilterConfig.add_arguments(group)
    parser.set_defaults(configs=(*(parser.get_default("configs") or ()), PrefilterConfig))


METHODS = ("influence", "hybrid", "magic")
"""``--method``: influence scores of every record (or of ``--prefilter``'s candidates), `HybridAttributor`, or
`MagicAttributor` on the replayable run ``--run`` (`llm-attrib train`) that made ``--model``."""


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """``--method {influence,hybrid}`` and the `HybridConfig` fields as flags (``--hybrid-fusion`` …)."""
    group = parser.add_argument_group("hybrid (--method hybrid)")
    group.add_argument("--method", default="influence", choices=METHODS,
                       help="influence: influence scores (of --prefilter's candidates, if given); hybrid: BM25/TF-IDF "
                            "recall per query, influence re-ranking on the answer tokens, fused rankings; magic: "
                            "exact metagradients of the replayable run --run")
    HybridConfig.add_arguments(group)
    magic = parser.add_argument_group("magic (--method magic)")
    magic.add_argument("--run", default=None, help="the replayable run folder (llm-attrib train) that made --model")
    MagicConfig.add_arguments(magic)
    parser.set_defaults(configs=(*(parser.get_default("configs") or ()), HybridConfig, MagicConfig))


def make_prefilter(args: argparse.Namespace, train: list[dict[str, Any]]) -> Prefilter | None:
    """The prefilter asked for (``--prefilter``, or the recall stage of ``--method hybrid``: a `HybridAttributor`),
    fitted on ``train`` (its index loaded from the ``--factors`` folder, saved there)."""
    hybrid = getattr(args, "method", "influence") == "hybrid"
    if hybrid and args.prefilter is not None:
        raise UserInputError("--prefilter narrows --method influence; --method hybrid has its own recall stage "
                             "(--hybrid-index, --hybrid-candidates)")
    if args.prefilter is None and not hybrid:
        return None
    config = HybridConfig.from_arguments(args) if hybrid else PrefilterConfig.from_arguments(args, index=args.prefilter)
    path = f"{args.factors}/prefilter-{config.index}.safetensors" if args.factors else None
    with main_process_first():  # rank 0 fits and saves the index, the other ranks load it
        return (HybridAttributor if hybrid else Prefilter)(config=config, columns=columns_from(args)).fit_or_load(
            path, train)


def columns_from(args: argparse.Namespace) -> Columns:
    return Columns(prompt=args.prompt_column, completion=args.completion_column, text=args.text_column,
                   id=args.id_column)


def load_train(args: argparse.Namespace, adapter: CausalLMAdapter) -> list[dict[str, Any]]:
    """The training records as dicts, with an ``id`` taken from ``--id-column`` or else an ``id`` column (each used
    once, of the column's type), or the row number;
    with ``--overflow split``, a document longer than ``adapter``'s context becomes its windows (ids ``"{id}#{k}"``,
    `CausalLMAdapter.split_windows`)."""
    columns = columns_from(args)
    dataset = load_records(args.train)
    present = set(dataset.column_names)
    has_pair = {columns.prompt, columns.completion} <= present
    if columns.id and columns.id not in present:
        raise UserInputError(f"{args.train}: missing id column '{columns.id}'; columns present: {sorted(present)}")
    if not has_pair and columns.text not in present:
        raise UserInputError(
            f"{args.train}: no column '{columns.text}' and no pair '{columns.prompt}'/'{columns.completion}' "
            f"(columns present: {sorted(present)}); pass --text-column or --prompt-column/--completion-column"
        )
    records = table_records(dataset, columns.id or ("id" if "id" in present else None), args.train)
    return adapter.split_windows(records) if adapter.encoding.overflow == "split" else records


def make_adapter(args: argparse.Namespace) -> CausalLMAdapter:
    """The model of ``--model`` with its tokenizer, on this process's device (`local_device`)."""
    adapter = CausalLMAdapter.from_pretrained(
        args.model, dtype=DTYPES[args.dtype] if args.dtype else None, base_model=args.base_model, modules=args.modules,
        columns=columns_from(args), max_length=args.max_length, chat_template=args.chat_template,
        encoding=EncodingConfig.from_arguments(args),
    )
    adapter.model.to(local_device())
    return adapter


def show_progress() -> bool:
    """Progress of long steps, shown by rank 0 only (several processes share stderr): a bar on a terminal, a line
    every 10 s in a log (`llm_attrib.progress`)."""
    return is_main_process()


def make_attributor(args: argparse.Namespace, adapter: CausalLMAdapter) -> InfluenceAttributor:
    return InfluenceAttributor(adapter, config=InfluenceConfig.from_arguments(args), cache_dir=args.factors,
                               progress=show_progress())
