"""The development workbench of kafka-replicator: what a clone uses to try, test, measure and
shake the replicator, and what the runtime wheel and the image leave out.

- sandbox, certificates: the local two-cluster Kafka (KRaft) on 127.0.0.1, with throwaway TLS;
- demo, traffic: the demo, and sample traffic checked record by record;
- proxy, chaos: the fault-injecting TCP proxy and the chaos soak;
- bench: the benchmark against MirrorMaker 2.
"""
