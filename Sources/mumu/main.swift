import MumuFormats
print("mumu")
