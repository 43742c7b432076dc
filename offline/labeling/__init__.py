"""Labeling: a local Label Studio server, the templates it labels with, pre-labels and agreement.

Import from the modules (the package imports nothing, so ``offline --help`` stays fast)::

    offline.labeling.templates.templates_dir(workspace)       # where labeling/ templates live
    offline.labeling.templates.load_template(name)            # XML checked against templates.toml
    offline.labeling.templates.load_templates()               # every template, checked
    offline.labeling.templates.template_names()               # their names
    offline.labeling.templates.check_columns(t, kind, cols)   # refuse a dataset before pushing
    offline.labeling.templates.task_data(t, row)              # one task's data from a cleaned row
    offline.labeling.templates.labels_from_result(t, result)  # one annotation, flattened
    offline.labeling.rules.keyword_prediction(t, row)         # bilingual keyword pre-label
    offline.labeling.rules.label_prediction(t, label, ...)    # a known label as a prediction
    offline.labeling.rules.predictions_from_file(path, t)     # --predictions FILE (JSONL)
    offline.labeling.agreement.agreement(t, tasks)            # kappas and NER F1 over tasks
    offline.labeling.server                                   # start / stop / status the server

The templates themselves (XML plus their field contract) are data, in the top-level
``labeling/`` directory of the source tree and ``files/labeling/`` of the bundle.
"""
