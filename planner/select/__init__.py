"""Selection: the Pareto front of feasible trials and policies that pick one deployment from it."""
