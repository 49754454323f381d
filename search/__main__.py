from cli import run_stage

run_stage("search")
