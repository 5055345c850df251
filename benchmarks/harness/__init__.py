"""What every benchmark script shares, so that each script holds only its experiment.

``child``: a measured child process (peak RSS, wall/CPU time, a memory guard, a frozen package);
``machine``: where and from which code a number came (machine, commit, command line);
``report``: cells, medians, markdown tables and compact JSON files.
"""
