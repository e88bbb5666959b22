"""One module per output format. Each defines ``FORMATS = {"name": PrinterClass}``;
sensilla.output discovers them, so a new format is one new file here."""
