"""Run folders and the library function behind each command-line verb that works on one.

One module per verb, over the run folder's records (`folder`) and loading (`load`); none of
them imports another verb, except `demo`, which runs them all:

- `folder`: what a run folder holds (`training_poses.json`, the training files' sources),
  whether a fit finished;
- `load`: `load_model` (exported as `shapeatlas.load_run`), matching settings checked against a
  run, the mesh files a verb is given;
- `fit`: `fit_run`, from a folder of groomed or raw meshes or label maps;
- `correspond`: `correspond_files`, the surface and record written for each input;
- `sample`: `sample_run`, virtual cohorts written in blocks, each shape checked;
- `reconstruct`: `reconstruct_files`, meshes through the model;
- `evaluate`: `evaluate_run`, the metrics of a run on a test folder;
- `demo`: `run_demo`, the whole pipeline on built-in synthetic LVs.

Output folders (new or empty, built beside and moved into place) are handled by
`shapeatlas.outputs` for every verb, grooming included.
"""
