"""What each decision step does, one module per step (the module its ``medpipe`` command runs):
:mod:`.features`, :mod:`.fuse`, :mod:`.thresholds`, :mod:`.submit`. Each gathers a stage's fold
outputs through :mod:`medpipe.layout`, calls the library and writes its outputs atomically; the
CLI only parses arguments. One module per step also keeps each rule's computed code inputs
(:mod:`medpipe.code_inputs`) to what that step really runs.
"""
