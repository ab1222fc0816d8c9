# medpipe: DICOM folders -> validated SIIM-ACR submission.  Read it as a table of contents;
# every rule is a thin call of one `medpipe` command, and the logic lives in the package.
#
#   snakemake --cores 8 submission                      # the default target
#   snakemake --cores 8 all                             # + the HTML report
#   snakemake --cores 8 submission --configfile configs/default.yaml configs/quick.yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


from medpipe.config import ConfigError, drop_removed_models, read_yaml, validate as validate_config

# The embedded default of the task the command line asks for (`task:` in an overlay), under
# the overlays: configs/default.yaml for SIIM, configs/<task>.yaml for another task.
_TASK_ASKED = (workflow.config_settings.overwrite_config or {}).get("task") or "siim"
DEFAULT_CONFIG = Path(workflow.basedir) / "configs" / (
    "default.yaml" if _TASK_ASKED == "siim" else f"{_TASK_ASKED}.yaml"
)
try:  # Snakemake's own reader says only "not valid JSON or YAML": ours names file and line
    read_yaml(DEFAULT_CONFIG)
except ConfigError as err:
    raise WorkflowError(str(err)) from None


configfile: str(DEFAULT_CONFIG)


drop_removed_models(config)
try:  # medpipe's validator: the key's path and the file and line that set it, the nearest key
    validate_config(
        config,
        str(Path(workflow.basedir) / "configs" / "schema.yaml"),
        sources=[
            DEFAULT_CONFIG,
            *workflow.config_settings.configfiles,
            dict(workflow.config_settings.config),  # --config key=value: no file to name
        ],
    )
except ConfigError as err:
    raise WorkflowError(str(err)) from None


include: "stages/common.smk"


# The task's DAG: the rule files it names (medpipe/tasks/), after the shared ones above.
for _rules in TASK.rule_files:

    include: f"stages/{_rules}"


rule submission:
    """The current stage's validated submission."""
    default_target: True
    input:
        path(LAYOUT.submission),


rule all:
    """The submission and the report (a task without a report: the submission)."""
    input:
        path(LAYOUT.submission),
        [path(LAYOUT.report_html)] if "report" not in TASK.missing else [],
