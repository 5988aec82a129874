"""Independent reference implementations the tests compare the package with.

The rule: each reference is written on its own, from the papers' formulas
(written out in ``docs/math.md``) or from the paper's code
(``zyuh/BDR-main``), with plain Python loops in float64; none calls or
mirrors ``bdr_avalanche``, so that a mistake in the package cannot hide in
its reference too.

- :mod:`reference.formulas`: the papers' formulas (BDR's
  prior and class statistics, CwD, LUCIR's losses, herding, the memory's
  gradient share, the padded crop);
- :mod:`reference.paper_code`: transcriptions of the paper's FACIL code,
  with the file and line of each;
- :mod:`reference.bdr_plugin`: the paper's ``BDR_loss`` over a whole phase.
"""
