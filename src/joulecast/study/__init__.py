"""The paper's study: its workloads (``joulecast.study.workloads``)."""
