"""agent_tree_operator: the kopf operator that runs AgentTrees as worker Deployments and AgentRuns as workflows."""
