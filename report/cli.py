"""The `weekday-circuits` command: run, build, report, list."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click

from report.boundary import error_boundary
from report.store.files import check_writable_dir

DEFAULT_OUT = Path("runs")
DEFAULT_SITE = Path("site")


def run_options(command):
    """The options shared by `run` and `report`."""
    options = [
        click.option("--model", "models", multiple=True, default=("gemma-3-270m",), show_default=True,
                     help="gemma-3-270m (bundled, runs offline), a Hugging Face id (gpt2 = GPT-2 small, the seed "
                          "notebook's model; gpt2-medium, ...) or a local checkpoint folder. Repeat for several."),
        click.option("--families", default="all", show_default=True,
                     help="'all' or a comma-separated list of family names (see `list families`)."),
        click.option("--families-file", type=click.Path(path_type=Path), default=None,
                     help="A TOML file of your own prompt families, instead of the shipped ones."),
        click.option("--analyses", default="auto", show_default=True,
                     help="auto: every analysis on families where the model does the task, and behaviour, logit "
                          "difference and the descriptive analyses where it is at chance (the page says what was "
                          "left out); 'all': every analysis everywhere; or a comma-separated list of names (see "
                          "`list analyses`)."),
        click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
                     help="Folder that holds the run folders."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
                     help="auto picks cuda, then mps, then cpu."),
        click.option("--resume", is_flag=True,
                     help="Continue the latest run in --out (or --run-id) with its own options, recomputing only "
                          "analyses whose files are missing or damaged; refused if the options given differ."),
        click.option("--force-resume", is_flag=True,
                     help="With --resume: continue even if families, their definitions, analyses, models or the "
                          "package version differ from the run's (redefined families are recomputed)."),
        click.option("--run-id", default=None,
                     help="Name of the run folder: letters, digits, '.', '_', '-', at most 100 characters "
                          "(default: the start time to the millisecond and a random suffix)."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                     show_default=True, help="Precision of the model's weights and activations. auto: float32 on "
                     "CPU/MPS and for models of at most 1B parameters, bfloat16 on CUDA above 1B."),
        click.option("--exact", default="auto", show_default=True, metavar="all|top:K[,sample:S]|auto",
                     help="Which cells of the patching sweeps exact patching computes. all: every cell; top:K,sample:S "
                          "(AtP*): attribution patching ranks every cell, exact patching verifies the top K per sweep "
                          "and S others drawn at random (top:K samples S = K), and the page states the estimated "
                          "false-negative rate; auto: all on CUDA, top:16,sample:16 on a CPU (a sweep with at most "
                          "K + S cells is exact in full either way)."),
        click.option("--steps", default=5, show_default=True, type=int, metavar="N",
                     help="EAP-IG's integration steps for edge_circuits (N >= 1; 1 is EAP, the gradient at the "
                          "twin's activations only)."),
        click.option("--shard", default=None, metavar="K/N",
                     help="Compute only the K-th of N deterministic shares of the (model, family) pairs, into its "
                          "own run folder (<run-id>-shardKofN); `build` merges the shards' folders."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _options(models, families, families_file, analyses, out, device, resume, run_id, force_resume, dtype, shard,
             exact, steps):
    from click.core import ParameterSource

    from report.run.options import RESUMABLE_OPTIONS, RunOptions, check_exact, check_steps
    from report.run.shard import parse_shard

    context = click.get_current_context()
    given = frozenset(name for name in RESUMABLE_OPTIONS
                      if context.get_parameter_source(name) not in (ParameterSource.DEFAULT, None))
    check_writable_dir(out, "--out")
    return RunOptions(models=list(models), families=families, families_file=families_file, analyses=analyses,
                      out=out, device=device, resume=resume, run_id=run_id, force_resume=force_resume, given=given,
                      dtype=dtype, shard=parse_shard(shard), exact=check_exact(exact), steps=check_steps(steps),
                      command=" ".join(shlex.quote(a) for a in ["weekday-circuits", *sys.argv[1:]]))


class _EchoHandler(logging.Handler):
    """Progress messages of `report.*` (e.g. the bundled model's minute-long first load) on stderr.

    click.echo looks up stderr at each call, so the handler survives CliRunner swapping the streams in tests.
    """

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _show_progress_messages() -> None:
    logger = logging.getLogger("report")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.INFO)


@click.group()
@click.version_option(package_name="weekday-circuits", prog_name="weekday-circuits")
def main():
    """How small language models know what day comes next: compute, save and publish the evidence."""
    _show_progress_messages()


@main.command()
@run_options
@error_boundary
def run(**kwargs):
    """Compute every analysis for every model and family, and save the results under --out."""
    from report.run.pipeline import run as run_pipeline

    run_dir = run_pipeline(_options(**kwargs))
    click.echo(f"results: {run_dir}")


def output_options(command):
    """The output forms shared by `build` and `report`."""
    options = [
        click.option("--site", type=click.Path(path_type=Path), default=None,
                     help=f"Folder to write the HTML pages into (default {DEFAULT_SITE}/ unless --single-file or "
                          "--pdf is given). It is replaced whole; a folder holding other files is refused."),
        click.option("--assets", "assets_mode", type=click.Choice(["inline", "shared"]), default="inline",
                     show_default=True, help="inline: every page carries plotly.js and circuitsvis (each page stands "
                                             "alone); shared: once under SITE/assets/, loaded by relative path."),
        click.option("--single-file", type=click.Path(path_type=Path), default=None,
                     help="Also (or only) write the whole report as one HTML file, to attach or send."),
        click.option("--pdf", type=click.Path(path_type=Path), default=None,
                     help="Also (or only) write a printable PDF (needs Chromium)."),
        click.option("--chromium", default=None, help="The Chromium program for --pdf (default: chromium on PATH)."),
        click.option("--title", default=None, help="The report's title (default: weekday-circuits)."),
        click.option("--force", is_flag=True, help="Replace a --site folder that an earlier build wrote even if "
                                                   "files were added to it since (they are deleted). A non-empty "
                                                   "folder no build wrote is refused even so."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _output_options(site, assets_mode, single_file, pdf, chromium, title, force):
    from report.publish.outputs import OutputOptions

    if site is None and single_file is None and pdf is None:
        site = DEFAULT_SITE
    return OutputOptions(site=site, shared_assets=assets_mode == "shared", single_file=single_file, pdf=pdf,
                         chromium=chromium, title=title, force=force)


def _build(run_dirs, outputs) -> None:
    from report.publish.outputs import build as build_outputs

    written, problems = build_outputs(run_dirs, outputs)
    for problem in problems:
        click.echo(f"warning: {problem} (its section says it is missing)", err=True)
    click.echo("\n".join(written))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@output_options
@error_boundary
def build(run_dirs, **kwargs):
    """Render the report from saved results only (no model is loaded)."""
    _build(list(run_dirs), _output_options(**kwargs))


@main.command()
@run_options
@output_options
@error_boundary
def report(site, assets_mode, single_file, pdf, chromium, title, force, **kwargs):
    """Run, then build: compute everything and write the report."""
    from report.publish.outputs import check
    from report.run.pipeline import run as run_pipeline

    outputs = _output_options(site, assets_mode, single_file, pdf, chromium, title, force)
    check(outputs, out=kwargs["out"])  # refuse a bad output (or one on the results) before minutes of computing
    run_dir = run_pipeline(_options(**kwargs))
    click.echo(f"results: {run_dir}")
    _build([run_dir], outputs)


@main.command(name="list")
@click.argument("what", type=click.Choice(["families", "analyses", "models"]))
@click.option("--families-file", type=click.Path(path_type=Path), default=None,
              help="List the families of this TOML file instead of the shipped ones.")
@error_boundary
def list_(what, families_file):
    """List the prompt families, the analyses, or the documented models."""
    if what == "families":
        from analyses.common.types import SEQUENCES
        from report.run.families_file import load_family_specs

        specs = load_family_specs(families_file).values()
        for spec in specs:
            twin = "relation twin" if spec.has_relation else "no relation twin"
            click.echo(f"{spec.name:24} {spec.sequence:8} {len(spec.templates)} template(s), {twin:16} "
                       f"answer = item{spec.offset_words}   {spec.templates[0]!r}   {spec.description}")
        click.echo("\nsequences (built in, and any the families file adds under [sequences] and uses):")
        for name, items in {**SEQUENCES, **{spec.sequence: spec.items for spec in specs}}.items():
            click.echo(f"{name:24} {len(items):2} items: {', '.join(items)}")
    elif what == "analyses":
        from analyses import REGISTRY

        for analysis in REGISTRY:
            click.echo(f"{analysis.name:20} {analysis.title}")
    else:
        from report.run.catalogue import describe
        from report.run.model import pick_device

        click.echo("\n".join(describe(pick_device("auto"))))


if __name__ == "__main__":  # python -m report.cli (the tests run the working tree this way)
    main()
