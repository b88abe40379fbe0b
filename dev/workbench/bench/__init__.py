"""Benchmarks against MirrorMaker 2: throughput, CPU cost and latency, in one run.

``python -m workbench.bench [--quick]`` starts the sandbox (or uses running clusters),
pre-loads a fixed data set (100 B and 1 KiB records in large batches, and 100 B records
one per batch, the worst case for batch mode), and measures side by side on the same
two clusters:

- our replicator in batch mode and in record mode: N ``replicate`` processes each (one
  per consumer-group member, the same Flow loop a Ray actor runs, without Ray around it);
- Apache Kafka's MirrorMaker 2 in dedicated mode, from the official jars;
- the existing chart's settings (flush after every message), on a bounded subset;
- the brokers' own limit (Kafka's producer and consumer performance tools).

Every copy is verified against the source before its row counts. Results go to a JSON
file, a table on stdout and a PNG chart. See BENCHMARKS.md.

Nothing here imports Ray: the numbers are the replication loop's own.
"""
