"""Small Hub repositories for every dataset of the paper (and the extras), laid out as the real
Hub repositories are according to documented listings, for `tests.hub_server.HubServer`.

Nothing here is derived from `jobs.data.registry`: repo ids, revisions, config and split
directory names, column names and ClassLabel names are written out from the sources quoted in
each entry (Hub tree listings, commit pages, dataset cards and loading scripts, as stored by the
search tool). They were NOT checked against the live Hub (unreachable from here); if the Hub
differs, these fixtures and jobs.data.registry must be corrected together (docs/hub-data.md).

Two layouts occur:
  * "parquet-export": the dataset viewer's conversion branch `refs/convert/parquet`, files at
    `<config>/<split>/0000.parquet` (more shards: 0001.parquet, ...), no README, the features
    (ClassLabel names included) in each file's `huggingface` schema metadata, as
    `datasets`' ParquetWriter stores them. The branch's main still holds the loading script.
  * "configs": a main-branch commit after the Hub's "Convert dataset to Parquet" PR: README.md
    YAML with `configs` (data_files per split, `<config>/<split>-00000-of-00001.parquet`) and
    `dataset_info` (features), no script.
Rows are invented (a few per split); only their shape is the real one.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field

from tests.hub_server import Repo

PARQUET_EXPORT = "refs/convert/parquet"

NLI_NAMES = ["entailment", "neutral", "contradiction"]
# MasakhaNER 1.0 / 2.0 cards: "The NER tags correspond to this list: O, B-PER, I-PER, B-ORG, I-ORG,
# B-LOC, I-LOC, B-DATE, I-DATE" (huggingface.co/datasets/masakhane/masakhaner README, Data Fields)
MASAKHANER_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]
# WikiANN card / loading script: ner_tags O B-PER I-PER B-ORG I-ORG B-LOC I-LOC
WIKIANN_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]

# configs (languages) as the sources list them
XNLI_CONFIGS = "ar bg de el en es fr hi ru sw th tr ur vi zh".split()  # README `language:` and dirs at b8dd5d7
AMERICASNLI_CONFIGS = "aym bzd cni gn hch nah oto quy shp tar".split()  # card; all_languages left out
INDICXNLI_CONFIGS = "as bn gu hi kn ml mr or pa ta te".split()  # card (mteb IndicXnliPairClassification)
MASAKHANER_CONFIGS = "amh hau ibo kin lug luo pcm swa wol yor".split()  # card (10 languages)
MASAKHANER2_CONFIGS = "bam bbj ewe fon hau ibo kin lug luo mos nya pcm sna swa tsn twi wol xho yor zul".split()  # card (20)
WIKIANN_CONFIGS = "de en fi fr sw te yo".split()  # a few of the 176 subsets the viewer lists
XQUAD_CONFIGS = ["xquad." + l for l in "ar de el en es hi ro ru th tr vi zh".split()]  # card (12 languages)
MLQA_CONFIGS = [f"mlqa.{l}.{l}" for l in "ar de en es hi vi zh".split()]  # discussions/5 file list


@dataclass
class DatasetFixture:
    repo_id: str
    layout: str  # "parquet-export" | "configs"
    revision: str  # the revision holding the data files (a branch name or a real commit id)
    source: str  # the documented listings this layout is copied from
    features: str  # "nli" | "glue" | "masakhaner" | "wikiann" | "tydiqa" | "squad"
    configs: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # config -> split -> rows
    main_script: str | None = None  # the loading script that main still holds (parquet-export case)


def _features(kind: str):
    import datasets as ds

    string = ds.Value("string")
    if kind == "nli":
        return ds.Features({"premise": string, "hypothesis": string, "label": ds.ClassLabel(names=NLI_NAMES)})
    if kind == "glue":
        return ds.Features({"premise": string, "hypothesis": string, "label": ds.ClassLabel(names=NLI_NAMES),
                            "idx": ds.Value("int32")})
    if kind == "masakhaner":
        return ds.Features({"id": string, "tokens": ds.Sequence(string),
                            "ner_tags": ds.Sequence(ds.ClassLabel(names=MASAKHANER_NAMES))})
    if kind == "wikiann":
        return ds.Features({"tokens": ds.Sequence(string), "ner_tags": ds.Sequence(ds.ClassLabel(names=WIKIANN_NAMES)),
                            "langs": ds.Sequence(string), "spans": ds.Sequence(string)})
    if kind in ("tydiqa", "squad"):
        return ds.Features({"id": string, "title": string, "context": string, "question": string,
                            "answers": ds.Sequence({"text": string, "answer_start": ds.Value("int32")})})
    raise ValueError(kind)


# ---- rows --------------------------------------------------------------------------------------
def _nli(tag: str, n: int = 3, glue: bool = False, unlabelled: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"premise": f"{tag} premise {i}", "hypothesis": f"{tag} hypothesis {i}", "label": -1 if unlabelled else i % 3}
        if glue:
            row["idx"] = i
        rows.append(row)
    return rows


def _masakhaner(tag: str) -> list[dict]:
    # tag ids index MASAKHANER_NAMES: 1 B-PER, 2 I-PER, 5 B-LOC, 7 B-DATE, 8 I-DATE
    return [
        {"id": "0", "tokens": ["Ade", "Bello", "lọ", "sí", "Lagos", tag], "ner_tags": [1, 2, 0, 0, 5, 0]},
        {"id": "1", "tokens": ["Ní", "ọjọ́", "Monday", tag], "ner_tags": [0, 7, 8, 0]},
    ]


def _wikiann(tag: str) -> list[dict]:
    return [
        {"tokens": ["Paris", "is", "in", "France", tag], "ner_tags": [5, 0, 0, 5, 0], "langs": [tag] * 5,
         "spans": ["LOC: Paris", "LOC: France"]},
        {"tokens": ["Marie", "Curie", "joined", "CNRS"], "ner_tags": [1, 2, 0, 3], "langs": [tag] * 4,
         "spans": ["PER: Marie Curie", "ORG: CNRS"]},
    ]


def _qa(qid: str, context: str, question: str, answer: str) -> dict:
    start = context.index(answer)
    return {"id": qid, "title": context.split()[0], "context": context, "question": question,
            "answers": {"text": [answer], "answer_start": [start]}}


def _tydiqa_secondary(split: str) -> list[dict]:
    # TyDiQA-GoldP has one config for all languages; "the language only in the id prefix", e.g.
    # "finnish-1438027099681899178-6" (ids of tydiqa-goldp-v1.1-{train,dev}.json)
    rows = [
        _qa(f"english-{split}-1", "The Nile is a river in Africa.", "Where is the Nile?", "Africa"),
        _qa(f"english-{split}-2", "Mount Kenya is in Kenya.", "Where is Mount Kenya?", "Kenya"),
        _qa(f"finnish-{split}-1438027099681899178-6", "Helsinki on Suomen pääkaupunki.", "Mikä on Suomen pääkaupunki?", "Helsinki"),
        _qa(f"korean-{split}-3", "서울은 한국의 수도이다.", "한국의 수도는?", "서울"),
        _qa(f"swahili-{split}-4", "Nairobi ni mji mkuu wa Kenya.", "Mji mkuu wa Kenya ni upi?", "Nairobi"),
    ]
    return rows


def _squad(tag: str) -> list[dict]:
    return [_qa(f"{tag}-q1", f"{tag}: Berlin is the capital of Germany.", "Capital of Germany?", "Berlin")]


# ---- the repositories -----------------------------------------------------------------------
FIXTURES: list[DatasetFixture] = [
    DatasetFixture(
        "nyu-mll/glue", "parquet-export", PARQUET_EXPORT,
        source=("huggingface.co/datasets/nyu-mll/glue/tree/26e1c199136e7a36dee5844821fd479611ee85bd/mnli/validation_matched "
                "(0000.parquet) and .../tree/1ca3e9f6e23e9a06d6293bd7eed9aa6fe5e237b1/mnli/validation_mismatched, both "
                "parquet-converter commits of refs/convert/parquet; split names train, validation_matched, "
                "validation_mismatched, test_matched, test_mismatched from the README dataset_info of config mnli "
                "(commit 4c50f6d2c71ecad30a90f5da22d5392673f3ab05); features premise, hypothesis, label "
                "(entailment/neutral/contradiction), idx"),
        features="glue",
        configs={"mnli": {"train": _nli("mnli-train", 4, glue=True), "validation_matched": _nli("mnli-vm", glue=True),
                          "validation_mismatched": _nli("mnli-vmm", glue=True),
                          "test_matched": _nli("mnli-tm", glue=True, unlabelled=True),
                          "test_mismatched": _nli("mnli-tmm", glue=True, unlabelled=True)}},
    ),
    DatasetFixture(
        "facebook/xnli", "configs", "b8dd5d7af51114dbda02c0e3f6133f332186418e",
        source=("huggingface.co/datasets/facebook/xnli/tree/b8dd5d7af51114dbda02c0e3f6133f332186418e (commit "
                "'Convert dataset to Parquet (#10)': dirs all_languages, ar, bg, ..., zh, README.md; 'Delete loading "
                "script'), .../tree/refs%2Fpr%2F10/ar (test-00000-of-00001.parquet, train-00000-of-00001.parquet, "
                "validation-00000-of-00001.parquet); README dataset_info per language: premise, hypothesis, label "
                "class_label entailment/neutral/contradiction, splits train/test/validation"),
        features="nli",
        configs={lang: {"train": _nli(f"xnli-{lang}-train"), "validation": _nli(f"xnli-{lang}-dev"),
                        "test": _nli(f"xnli-{lang}-test")} for lang in XNLI_CONFIGS},
    ),
    DatasetFixture(
        "nala-cub/americas_nli", "parquet-export", PARQUET_EXPORT,
        source=("huggingface.co/datasets/nala-cub/americas_nli/commit/c3477efa8ce280ad4b2aaa0c25c923e73e05b02f "
                "(parquet-converter: aym/americas_nli-test.parquet -> aym/test/0000.parquet, "
                "aym/americas_nli-validation.parquet -> aym/validation/0000.parquet), .../commits/refs%2Fconvert%2Fparquet/"
                "tar/validation (2024 commits); splits validation and test only; premise, hypothesis, label 0 "
                "entailment 1 neutral 2 contradiction"),
        features="nli", main_script="americas_nli.py",
        configs={lang: {"validation": _nli(f"anli-{lang}-dev"), "test": _nli(f"anli-{lang}-test")}
                 for lang in AMERICASNLI_CONFIGS},
    ),
    DatasetFixture(
        "Divyanshu/indicxnli", "parquet-export", PARQUET_EXPORT,
        source=("huggingface.co/datasets/Divyanshu/indicxnli/commits/635b8660242e82b2ac96787c17f71953833bf1dd/pa/"
                "validation and .../c92f5133002c5c366d9819525572366a2e0a4cf9/te/validation (refs/convert/parquet, "
                "'Delete old duckdb index files' 2024); main is the loading-script revision 7092c27872e919f31d04"
                "96fb8b9c47bd2cba3f6c (pinned with trust_remote_code by mteb's IndicXnliPairClassification); "
                "premise, hypothesis, label entailment/neutral/contradiction"),
        features="nli", main_script="indicxnli.py",
        configs={lang: {"train": _nli(f"ixnli-{lang}-train"), "validation": _nli(f"ixnli-{lang}-dev"),
                        "test": _nli(f"ixnli-{lang}-test")} for lang in INDICXNLI_CONFIGS},
    ),
    DatasetFixture(
        "unimelb-nlp/wikiann", "parquet-export", PARQUET_EXPORT,
        source=("huggingface.co/datasets/unimelb-nlp/wikiann/commits/f7875fb3d62a2fd45887ff5d022c89c1aec737ef/ace/"
                "train/0000.parquet, .../589f005e3b176c05f1e7952cef7a1ce631b83be2/cs/validation, "
                ".../commits/refs%2Fconvert%2Fparquet/ang (parquet-converter, 2024); subsets are language codes "
                "(viewer lists 176: ace, af, ..., en, ...); tokens, ner_tags O B-PER I-PER B-ORG I-ORG B-LOC I-LOC, "
                "langs, spans"),
        features="wikiann",
        configs={lang: {"train": _wikiann(lang), "validation": _wikiann(lang), "test": _wikiann(lang)}
                 for lang in WIKIANN_CONFIGS},
    ),
    DatasetFixture(
        "masakhane/masakhaner", "parquet-export", PARQUET_EXPORT,
        source=("huggingface.co/datasets/masakhane/masakhaner/tree/05f9d25f04659624ce79928e1610ea3aa1e2e01e (main: "
                ".gitattributes, README.md, dataset_infos.json, masakhaner.py), .../commits/refs%2Fconvert%2Fparquet/"
                "amh/train (parquet-converter, 2024); dataset card: id, tokens, ner_tags with the 9 tags O ... I-DATE"),
        features="masakhaner", main_script="masakhaner.py",
        configs={lang: {"train": _masakhaner(lang), "validation": _masakhaner(lang), "test": _masakhaner(lang)}
                 for lang in MASAKHANER_CONFIGS},
    ),
    DatasetFixture(
        "masakhane/masakhaner2", "parquet-export", PARQUET_EXPORT,
        source=("huggingface.co/datasets/masakhane/masakhaner2/commit/4bd5e1b7b7d2a353bc6582abcd76e6cb304fb388 "
                "(parquet-converter: bam/masakhaner2-test.parquet -> bam/test/0000.parquet, ...-train -> "
                "bam/train/0000.parquet, ...-validation -> bam/validation/0000.parquet), .../commits/"
                "refs%2Fconvert%2Fparquet/yor (2024); same 9 tags as MasakhaNER 1.0"),
        features="masakhaner", main_script="masakhaner2.py",
        configs={lang: {"train": _masakhaner(lang), "validation": _masakhaner(lang), "test": _masakhaner(lang)}
                 for lang in MASAKHANER2_CONFIGS},
    ),
    DatasetFixture(
        "google-research-datasets/tydiqa", "configs", "da78f23f9119363459acbaf46bf89426ff26c259",
        source=("huggingface.co/datasets/google-research-datasets/tydiqa/commit/da78f23f9119363459acbaf46bf89426ff26c259 "
                "('Convert dataset to Parquet (#3)': primary_task/train-000NN-of-00012.parquet, "
                "secondary_task/train-00000-of-00001.parquet, secondary_task/validation-00000-of-00001.parquet, "
                "tydiqa.py deleted); secondary_task features id, title, context, question, answers{text, "
                "answer_start int32}; language only in the id prefix"),
        features="tydiqa",
        configs={"secondary_task": {"train": _tydiqa_secondary("train"), "validation": _tydiqa_secondary("dev")}},
    ),
    DatasetFixture(
        "google/xquad", "parquet-export", PARQUET_EXPORT,
        source=("huggingface.co/datasets/google/xquad/commit/288fc185cc55d8325612da253f7963c4260c2e0e (parquet-converter: "
                "xquad.ru/xquad-validation.parquet, the converter's pre-2023 naming), renamed to <config>/<split>/"
                "0000.parquet as in google-research-datasets/xquad_r commit 71d2fc28629f23dc1069319dbf80c9847252a55d "
                "(ar/xquad_r-validation.parquet -> ar/validation/0000.parquet); configs xquad.<lang>, one split "
                "validation; SQuAD features"),
        features="squad", main_script="xquad.py",
        configs={name: {"validation": _squad(name)} for name in XQUAD_CONFIGS},
    ),
    DatasetFixture(
        "facebook/mlqa", "parquet-export", PARQUET_EXPORT,
        source=("huggingface.co/datasets/mlqa/commits/refs%2Fconvert%2Fparquet/mlqa-translate-test.vi (facebook/mlqa, "
                "parquet-converter, 'Delete old duckdb index files' 2024); configs mlqa.<context>.<question> with "
                "splits validation and test (facebook/mlqa discussions/5 file list: mlqa.ar.ar/test-..., "
                "mlqa.ar.ar/validation-...); SQuAD features"),
        features="squad", main_script="mlqa.py",
        configs={name: {"validation": _squad(f"{name}-dev"), "test": _squad(f"{name}-test")} for name in MLQA_CONFIGS},
    ),
]

# a script dataset whose parquet conversion never happened: "the HF refs API returns an empty
# converts array and the tree [refs%2Fconvert%2Fparquet] returns 404" (github.com/bioscan-ml/
# BarcodeBERT/issues/29, for bioscan-ml/CanadianInvertebrates-ML)
UNCONVERTED = DatasetFixture(
    "bioscan-ml/CanadianInvertebrates-ML", "parquet-export", PARQUET_EXPORT,
    source="github.com/bioscan-ml/BarcodeBERT/issues/29", features="nli", main_script="CanadianInvertebrates-ML.py",
)


def _parquet(kind: str, rows: list[dict]) -> bytes:
    """A parquet file as `datasets` writes it: the arrow schema of the features, with the features
    (ClassLabel names) in the `huggingface` schema metadata (`Features.arrow_schema`), which
    datasets 5.x reads back (`Features.from_arrow_schema`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=_features(kind).arrow_schema), buf)
    return buf.getvalue()


def _readme(fixture: DatasetFixture) -> bytes:
    import yaml

    features = _features(fixture.features)
    card = {
        "dataset_info": [
            {"config_name": name, "features": features._to_yaml_list(),
             "splits": [{"name": split, "num_bytes": 0, "num_examples": len(rows)} for split, rows in splits.items()]}
            for name, splits in fixture.configs.items()
        ],
        "configs": [
            {"config_name": name,
             "data_files": [{"split": split, "path": f"{name}/{split}-*"} for split in splits]}
            for name, splits in fixture.configs.items()
        ],
    }
    return ("---\n" + yaml.safe_dump(card, sort_keys=False, allow_unicode=True) + "---\n\n# fixture\n").encode()


def build_repo(fixture: DatasetFixture) -> Repo:
    repo = Repo("dataset", fixture.repo_id, source=fixture.source)
    attributes = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    if fixture.layout == "configs":
        files = {".gitattributes": attributes, "README.md": _readme(fixture)}
        for name, splits in fixture.configs.items():
            for split, rows in splits.items():
                files[f"{name}/{split}-00000-of-00001.parquet"] = _parquet(fixture.features, rows)
        repo.commit(files, refs=("main",), sha=fixture.revision)
        return repo
    # parquet-export: main holds the loading script (datasets >= 4 refuses it), the branch the files
    main = {".gitattributes": attributes, "README.md": b"---\nlicense: unknown\n---\n"}
    if fixture.main_script:
        main[fixture.main_script] = b"import datasets\n\nclass Builder(datasets.GeneratorBasedBuilder):\n    pass\n"
    else:  # a main branch with data files of its own (not the pinned revision)
        main["README.md"] = b"---\nlicense: other\n---\n"
    repo.commit(main, refs=("main",))
    if fixture.configs:
        export = {".gitattributes": attributes}
        for name, splits in fixture.configs.items():
            for split, rows in splits.items():
                export[f"{name}/{split}/0000.parquet"] = _parquet(fixture.features, rows)
        repo.commit(export, refs=(fixture.revision,))
    return repo


@functools.lru_cache(maxsize=1)
def _all_dataset_repos() -> tuple[Repo, ...]:
    return tuple(build_repo(f) for f in FIXTURES) + (build_repo(UNCONVERTED),)


def dataset_repos() -> list[Repo]:
    """Every dataset repository (built once per process; the server only reads them)."""
    return list(_all_dataset_repos())


def fixture(repo_id: str) -> DatasetFixture:
    for f in FIXTURES:
        if f.repo_id == repo_id:
            return f
    raise KeyError(repo_id)


# ---- a model repository --------------------------------------------------------------------------
TINY_MODEL_ID = "xlt-fixtures/tiny-xlm-roberta"  # a Hub-style name; files as in the tiny preset (jobs.models)
TINY_MODEL_SOURCE = ("file names of huggingface.co/FacebookAI/xlm-roberta-base (config.json, model.safetensors, "
                     "tokenizer.json) plus tokenizer_config.json; contents: jobs.models.build_tiny (hidden 64, 2 layers, "
                     "pruned XLM-R tokenizer)")


def model_repo(directory) -> Repo:
    """A model repo holding the files of a built tiny preset directory."""
    from pathlib import Path

    directory = Path(directory)
    files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    repo = Repo("model", TINY_MODEL_ID, source=TINY_MODEL_SOURCE)
    repo.commit(files, refs=("main",))
    return repo
