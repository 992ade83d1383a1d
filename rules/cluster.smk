# Cluster execution (profiles/slurm-h100, profiles/slurm-local; README "Running on a cluster").
# Included last: every rule defined above gets the config's/environment's SLURM partition and account (the GPU
# partition for rules that ask for GPUs) unless it already names one, and before the first
# job starts the jobs that will run are checked against where they will run (rocktokens.workflow.cluster.preflight):
# a partition that does not exist, a GPU rule on nodes without GPUs, requests no node can hold -- one message.
from rocktokens.workflow.cluster import asks_for_gpus, check_parallelism, placement, preflight
from rocktokens.workflow.gpu_plan import check_gpu_plan

check_parallelism(config)
check_gpu_plan(config)  # GPU memory per rule (rocktokens/workflow/gpu_plan.py); nothing when no rule asks for GPUs

for _rule in workflow.rules:
    for _key, _value in placement(config, gpu=asks_for_gpus(_rule.resources)).items():
        _rule.resources.setdefault(_key, _value)  # kept when res() or --set-resources already placed it


onstart:
    preflight(workflow)
