"""simulators room: synthetic patients (12-lead ECG with MI, confounders, noise), lab kinetics,
scenario files, ``mirage simulate`` (a WFDB + manifest dataset) and ``mirage replay`` (Kafka).

Entry points: :func:`simulators.ecg.synthesize`, :func:`simulators.scenario.load_scenario`,
:func:`simulators.cohort.build_cohort`, :func:`simulators.simulate.simulate` and the async
:func:`stream.tools.replay.replay`. See docs/SIMULATORS.md.
"""
