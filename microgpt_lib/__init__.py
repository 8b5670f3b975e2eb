"""microgpt_lib: the code every chapter of the microgpt course imports.

Each chapter is a pair of modules: <topic>.py is what the chapter builds (and what later chapters
import), <topic>_lab.py how the chapter measures it. bench (measuring) and machine (this
machine's facts and settings) sit below every chapter; suites runs the benchmarks from the
command line. Modules are imported on demand: ``from microgpt_lib import bench`` pulls in only
what bench needs.
"""

__version__ = "0.1.0"
