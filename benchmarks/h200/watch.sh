#!/usr/bin/env bash
# Sourced by the H200 session scripts: `watch_processes FILE &` writes down, every 10 s until killed, the run's pytest
# processes (state, elapsed and CPU time, memory) and the GPU's use, for the record (docs/pr-gate.md reads the phases
# of a head-to-head run from it: all processes preparing at once, or one at a time in the ring).
watch_processes() {
  while sleep 10; do
    { date -u +%T; ps -eo pid,ppid,stat,etime,time,pcpu,rss,args --sort=pid | grep -E "[p]ytest" | cut -c1-160
      nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; } >> "$1" 2>&1
  done
}
