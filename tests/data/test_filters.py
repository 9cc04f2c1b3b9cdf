import random

from radfm.data import filters
from radfm.data.manifest import ImageRef, Sample


def _s(i, response, modality=None, task="report", caption=None):
    extra = {"caption": caption} if caption else {}
    return Sample(f"s{i}", "d", [ImageRef("/x.png", modality=modality)], task=task, instruction="<image> q",
                  response=response, extra=extra)


def test_measurement_sentences_removed():
    text = "A 2.5 cm mass in the liver. No ascites. Nodule of 5mm. The spleen is normal."
    cleaned, n = filters.remove_measurement_sentences(text)
    assert cleaned == "No ascites. The spleen is normal." and n == 2
    kept, rep = filters.filter_measurements([_s(0, text), _s(1, "Lesion measures 3 cm."), _s(2, "Normal.")])
    assert [s.id for s in kept] == ["s0", "s2"] and kept[0].response == cleaned
    assert (rep.kept, rep.dropped, rep.details["sentences_removed"]) == (2, 1, 3)
    assert not filters.has_measurement("The common bile duct is normal.")  # "cm" only as a unit


def test_radiology_captions_and_modalities():
    samples = [_s(0, "x", caption="Axial CT of the abdomen"), _s(1, "x", caption="H&E stain, 40x"),
               _s(2, "x", caption="Chest X-ray shows opacity"), _s(3, "x", caption="Photograph of the rash")]
    kept, rep = filters.keep_radiology_captions(samples)
    assert [s.id for s in kept] == ["s0", "s2"] and (rep.kept, rep.dropped) == (2, 2)
    samples = [_s(0, "x", "CT"), _s(1, "x", "Histology"), _s(2, "x", "MR - T2 weighted"), _s(3, "x", None), _s(4, "x", "Photograph")]
    kept, rep = filters.drop_non_radiology(samples)
    assert [s.id for s in kept] == ["s0", "s2", "s3"] and rep.dropped == 2


def test_balance_normal_abnormal():
    samples = [_s(i, "no", task="diagnosis_inductive") for i in range(10)] + [_s(10 + i, "yes", task="diagnosis_inductive") for i in range(3)]
    kept, rep = filters.balance_normal_abnormal(samples, random.Random(0))
    assert sum(s.response == "yes" for s in kept) == 3 and sum(s.response == "no" for s in kept) == 3
    assert rep.details == {"normal_before": 10, "abnormal_before": 3} and rep.dropped == 7
    chained, reports = filters.apply_radmd_filters(samples + [_s(99, "Size 3.2 cm.")], random.Random(0))
    assert [r.name for r in reports] == ["non_radiology", "measurements", "balance_normal_abnormal"]
    assert len(chained) == 6
