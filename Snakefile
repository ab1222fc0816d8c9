# medpipe: DICOM folders -> validated SIIM-ACR submission.  Read it as a table of contents;
# every rule is a thin call of one `medpipe` command, and the logic lives in the package.
#
#   snakemake --cores 8 submission                      # the default target
#   snakemake --cores 8 all                             # + the HTML report
#   snakemake --cores 8 submission --configfile configs/default.yaml configs/quick.yaml
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: str(Path(workflow.basedir) / "configs" / "default.yaml")


from medpipe.config import drop_removed_models

drop_removed_models(config)
validate(config, str(Path(workflow.basedir) / "configs" / "schema.yaml"))


include: "stages/common.smk"
include: "stages/data.smk"
include: "stages/segment.smk"
include: "stages/gate.smk"
include: "stages/fuse.smk"
include: "stages/submit.smk"
include: "stages/stage2.smk"
include: "stages/report.smk"


rule submission:
    """The current stage's validated submission."""
    default_target: True
    input:
        f"{RUN}/submission.csv",


rule all:
    """The submission and the report."""
    input:
        f"{RUN}/submission.csv",
        f"{RUN}/reports/report.html",
