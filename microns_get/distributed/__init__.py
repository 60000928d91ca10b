"""A plan split into tasks on python-task-queue (fq:// on a shared file system, sqs://), and the
`microns-get worker` that leases and runs them with the same engine."""
