"""SEN Crystal Explorer: symmetry-aware crystal property prediction with capsule routing.

>>> from sen import Predictor, read_structure
>>> predictor = Predictor.load()
>>> predictor.predict(read_structure("NaCl.cif"))  # doctest: +SKIP
[{'formation_energy_per_atom': -2.0, 'band_gap': 5.0, ...}]
"""

from sen.errors import StructureError
from sen.io import read_structure
from sen.predict import Predictor
from sen.symmetry import SymmetryReport, analyze_symmetry

__version__ = "0.1.0"
__all__ = ["Predictor", "StructureError", "SymmetryReport", "analyze_symmetry", "read_structure", "__version__"]
