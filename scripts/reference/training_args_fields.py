"""The fields of HF TrainingArguments, with their defaults, read from transformers' source.

Writes test/fixtures/reference/training_args_fields.json, which test/config/hf-keys.test.ts checks
the config loader against: every field name is accepted, and every field set to its default loads
with no notice and no error. The source is parsed (ast), not imported, so any version's
training_args.py works without installing it:

    pip download --no-deps transformers==4.57.6 && unzip -o transformers-4.57.6-*.whl 'transformers/training_args.py' -d 4.57.6
    python scripts/reference/training_args_fields.py 4.57.6=4.57.6/transformers/training_args.py 5.18.0=...

Defaults that are not literals (`default_optim`, a value computed at import) are left out of
"defaults"; their names are still listed.
"""
import ast
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "test/fixtures/reference/training_args_fields.json"


def fields(path):
    tree = ast.parse(Path(path).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainingArguments")
    names, defaults = [], {}
    for st in cls.body:
        if not (isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)) or st.target.id.startswith("_"):
            continue
        name = st.target.id
        names.append(name)
        value = st.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
            kw = {k.arg: k.value for k in value.keywords}
            if "default_factory" in kw:
                factory = getattr(kw["default_factory"], "id", "")
                if factory in ("list", "dict"):
                    defaults[name] = [] if factory == "list" else {}
                continue
            value = kw.get("default")
        if value is None:
            continue
        try:
            defaults[name] = ast.literal_eval(value)
        except ValueError:
            pass  # computed default
    return names, defaults


def main(args):
    data = json.loads(OUT.read_text()) if OUT.exists() else {"versions": {}}
    for arg in args:
        version, path = arg.split("=", 1)
        names, defaults = fields(path)
        data["versions"][version] = {"fields": names, "defaults": defaults}
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
