"""What the offline-RL example scripts share, as one small package.

Layers, lowest first (a module imports only its own layer and the ones below):

* ``errors`` (one-line user errors, exit code 2), ``files`` (atomic writes, full disks,
  directory locks, downloads), ``tianshou_adapter`` (every use of Tianshou 2.0.1's private
  attributes; test/test_tianshou_adapter.py checks them against the installed Tianshou)
* ``data``: ``d4rl`` (D4RL/Minari loading, task mapping, normalized scores), ``atari_buffer``
  (the Atari buffer file format), ``tfrecord`` (TFRecord reading and writing),
  ``rl_unplugged`` (RL Unplugged Atari shards to buffers), ``rl_unplugged_writer`` (shards in
  RL Unplugged's record format); ``atari``: ``env`` (Atari wrappers), ``networks`` (Nature CNN)
* ``updates``: ``core`` (device datasets, functional Adam, targets, the compiled runner),
  ``continuous`` and ``discrete`` (the algorithms' update steps), ``select`` (step per algorithm)
* ``algorithms``: Tianshou's offline algorithm classes whose update is the functional step,
  the paper's maths by default (``continuous``, ``discrete``; ``base``: what they share)
* ``run``: ``training`` (arguments, checkpoints, the offline trainer), ``arguments`` (their
  checks, at parsing), ``evaluation``,
  ``background_eval``, ``summary`` (run-directory file names), ``d4rl`` and ``atari`` (what the
  D4RL and Atari scripts share)
* ``results``: ``sweep`` (grids on Ray), ``aggregate`` (tables and plots);
  ``dataset_maker`` (SAC snapshots to D4RL-schema datasets)

The scripts in ``examples/`` import this package; it never imports them.
"""
