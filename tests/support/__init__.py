"""Test support, not installed: the lab (a real Orthanc and node processes, a hostile DICOMweb server,
made-up CT and X-ray studies) and fixtures shared by several test folders. Tests import it as
``support`` (tests/conftest.py puts tests/ on sys.path); scripts/ do the same."""
