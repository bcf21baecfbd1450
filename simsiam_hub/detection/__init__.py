"""What detection transfer needs that does not import Detectron2: the C4 backbone converter
(``convert``), the VOC and COCO checks run before a model is built (``datasets``), which
Detectron2 is installed (``install``) and generated VOC/COCO-format data (``synthetic``)."""
