"""MLflow "model from code" for RadFM: logged with the model, run by ``mlflow.pyfunc.load_model``.

Nothing is pickled: MLflow executes this file, which names the model class, then calls
``load_context`` (reads the logged model folder) and ``predict``.
"""

import mlflow

from radfm.doors.mlflow_model import RadFMPyfunc


class RadFMPythonModel(RadFMPyfunc, mlflow.pyfunc.PythonModel):
    """:class:`RadFMPyfunc` as an ``mlflow.pyfunc.PythonModel``."""


mlflow.models.set_model(RadFMPythonModel())
