"""Who gets room keys: the sharing policy and the withheld notices (spec: "Reporting that decryption
keys are withheld"; v1.18 "Recommended client behaviour", MSC4153)."""
