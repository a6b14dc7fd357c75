"""Plans: Change / NoChange steps per host, grouped in ordered phases."""

from homekube.plan.model import Change, NoChange, PhasePlan, Plan, Run, Step, WriteFile

__all__ = ["Change", "NoChange", "PhasePlan", "Plan", "Run", "Step", "WriteFile"]
