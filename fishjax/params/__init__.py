"""What a method trains and how it is combined with the frozen base: masks, the masked
optimizer transform, sparse increments and PEFT trees. Pure functions over pytrees."""
