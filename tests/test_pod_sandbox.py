"""The pod-sandbox page's own masks hide what the bridge plugin and the kernel pick at
random (host-side veth names, MACs, and the link-local addresses made from those MACs),
and nothing the lab fixes."""
from __future__ import annotations

import pytest

from conftest import page_masks
from deepdive.masking import mask_text
from deepdive.parse import link_local


@pytest.fixture(scope="module")
def masks():
    return page_masks("pod-sandbox")


@pytest.mark.parametrize("mac", ["d6:02:86:05:6e:9f", "02:00:5a:01:02:03", "0a:00:00:00:00:01", "fe:ff:ff:ff:ff:ff"])
def test_a_random_mac_and_its_link_local_address_are_masked_together(masks, mac):
    text = f"link/ether {mac} brd ff:ff:ff:ff:ff:ff\n    inet6 {link_local(mac)}/64 scope link \n"
    assert mask_text(text, extra=masks) == ("link/ether <random-mac> brd ff:ff:ff:ff:ff:ff\n"
                                            "    inet6 fe80::<random>/64 scope link \n")


@pytest.mark.parametrize("mac", ["02:00:00:00:00:01", "02:00:00:ab:cd:ef"])
def test_a_fixed_mac_and_its_link_local_address_are_compared_as_they_are(masks, mac):
    text = f"link/ether {mac} brd ff:ff:ff:ff:ff:ff\n    inet6 {link_local(mac)}/64 scope link \n"
    assert mask_text(text, extra=masks) == text
