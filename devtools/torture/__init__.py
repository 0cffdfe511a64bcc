"""A machine that hunts violations of the docs' promises (``make torture``).

As Jepsen, FoundationDB's simulation and TigerBeetle's VOPR do: a seed draws a fault schedule
(``schedule``), a nemesis applies it to real processes (``nemesis``: Redis out of memory,
SCRIPT FLUSH, restarts with and without AOF, CLIENT PAUSE, a proxy that delays, drops or cuts
replies (``proxy``), the leader stopped past its lease, workers and aggregators killed, worker
clocks stepped and slewed, a cluster failover and a slot moved under load, poisoned fields, a
snapshot from a 'newer' leader, operator commands) while worker processes record a known
ledger of calls (``workers``, ``ledger``) and the run samples the lease, the breakers and both
replicas' counters (``recorder``). After the schedule quiesces, the checker (``checker``,
``accounting``, ``authority``: pure) judges every invariant against the ledger and the final
state (``final``); ``report`` prints the verdict; ``known`` lists the breaks found and being
fixed, each with its regression test.
"""
