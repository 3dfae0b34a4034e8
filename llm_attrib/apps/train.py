"""``llm-attrib train``: fine-tune a local model replayably (`llm_attrib.training`), for ``trace --method magic``.

Writes the run record to ``--output`` (``run.json``, ``checkpoints/``) and the fine-tuned model (with its tokenizer)
to ``--output/model``: trace that model with ``--model OUT/model --run OUT --method magic``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llm_attrib.apps import options
from llm_attrib.data import EncodingConfig
from llm_attrib.training.config import TrainConfig


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a model replayably (for --method magic)",
                                   description=__doc__.splitlines()[0])
    options.add_model_and_data_options(parser)
    group = parser.add_argument_group("training")
    TrainConfig.add_arguments(group)
    parser.add_argument("--output", required=True, help="folder of the run record and the fine-tuned model")
    parser.set_defaults(func=run, configs=(*(parser.get_default("configs") or ()), TrainConfig))


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_attrib.adapters.causal_lm import CausalLMAdapter
    from llm_attrib.errors import UserInputError
    from llm_attrib.training import train_replayable

    if not Path(args.model).is_dir():
        raise UserInputError(f"--model {args.model} is not a local model folder")
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    encoding = EncodingConfig.from_arguments(args)
    columns = options.columns_from(args)
    adapter = CausalLMAdapter(model, tokenizer, columns=columns, max_length=args.max_length, encoding=encoding)
    records = options.load_train(args, adapter)
    replayable = train_replayable(model, tokenizer, records, args.output, TrainConfig.from_arguments(args),
                                  columns=columns, encoding=encoding, max_length=args.max_length,
                                  chat_template=args.chat_template, model_path=args.model,
                                  progress=options.show_progress())
    final = replayable.model_at(replayable.state(replayable.total_steps))
    out = Path(args.output) / "model"
    final.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    seconds = replayable.train_seconds
    print(f"trained {replayable.total_steps} steps on {len(records)} records"
          + (f" in {seconds:.1f} s" if seconds else " (resumed)")
          + f"; run recorded in {args.output}, model in {out}")
    return 0
