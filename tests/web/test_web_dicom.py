"""DICOM: both shared files decode (MONOCHROME1 inverted), and their patient tags never leave."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from webhelpers import DICOM_M1, DICOM_M2, PATIENT_TAG_VALUE, post_api, post_form

from chestx.imaging import read_image


def test_the_shared_dicoms_carry_the_patient_tags_we_check_for(cxr_dir):
    import pydicom

    for name in (DICOM_M1, DICOM_M2):
        dataset = pydicom.dcmread(cxr_dir / name)
        assert str(dataset.PatientName) == PATIENT_TAG_VALUE
        assert str(dataset.PatientID) == PATIENT_TAG_VALUE


def test_monochrome1_is_inverted_on_reading(cxr_dir):
    """The two files store the same values; MONOCHROME1 means bright is low, so the decoded
    MONOCHROME1 image must be the negative of the MONOCHROME2 one."""
    m2 = read_image(cxr_dir / DICOM_M2)
    m1 = read_image(cxr_dir / DICOM_M1)
    assert m1.format == m2.format == "DICOM" and m1.modality == "CR"
    assert m1.pixels.shape == m2.pixels.shape == (1024, 1024)
    assert np.allclose(m1.pixels, 1.0 - m2.pixels, atol=1e-5)
    assert not np.allclose(m1.pixels, m2.pixels, atol=0.1)


@pytest.mark.parametrize("name", [DICOM_M2, DICOM_M1])
def test_patient_tags_never_reach_a_page_json_image_or_log(client, cxr_dir, caplog, name):
    data = (cxr_dir / name).read_bytes()
    caplog.set_level(logging.DEBUG)
    response = post_form(client, data, filename="Doe_Jane.dcm")
    assert response.status_code == 303
    location = response.headers["Location"]
    page = client.get(location).get_data(as_text=True)
    assert len(re.findall(r"data-probability=", page)) == 14
    outputs = [page.encode(), client.get(location + "/image.png").data]
    outputs += [client.get(url).data for url in re.findall(r'src="([^"]+/map/[^"]+)"', page)]
    api = post_api(client, data, filename="Doe_Jane.dcm")
    assert api.status_code == 200 and api.json["image"]["format"] == "DICOM"
    outputs.append(api.data)
    outputs.append(caplog.text.encode())
    for output in outputs:
        for secret in (PATIENT_TAG_VALUE, "16d7f894", "Doe_Jane", "Doe^Jane"):
            assert secret.encode() not in output
