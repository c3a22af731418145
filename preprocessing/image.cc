// placeholder until the preprocessing module lands
