"""The MONAI Deploy application: ``deploy_app`` (operators: the input folder checked by
``deploy_rules.stage_input``, the SDK's series selection, the request path, our SR) and ``map/`` (its
MAP packaging files and the SDK pins of the side environment ``.venv-deploy``).
Nothing is imported here so that ``import radfm`` stays light.
"""
